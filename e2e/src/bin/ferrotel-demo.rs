//! `make demo`: the whole of Ferrotel on one machine, in the foreground, on
//! real pods.
//!
//! Starts a local control plane with a real node (containerd, kubelet,
//! kube-proxy, CoreDNS: `ferrotel_e2e::node`), builds the project's images
//! locally and loads them into the node, installs the Helm chart, runs a
//! Python storefront calling a Go catalogue as Deployments (not
//! instrumented), applies `config/propagation` (`config/samples`, which opts
//! their namespace in and creates a TelemetryCollector and an
//! Instrumentation, plus a ProbeClass that allows trace propagation: the
//! operator then runs the collector and the Go and Python probes as pods,
//! and each storefront request is one trace down to the catalogue), points the
//! sample collector at a backend on the host, drives traffic, prints spans
//! as the backend receives them and ends with a RED summary per service, how
//! many requests formed one trace across both services, and the service
//! map's edges with their p50/p90/p99.
//! Ctrl-C (or `--duration`) ends it and everything it started is stopped and
//! removed; `ferrotel-demo down` cleans up after a run that was killed.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ferrotel_e2e::stack::{self, App, StackImages};
use ferrotel_e2e::{Span, TestBed, TestBedOptions};

#[derive(Debug, Parser)]
#[command(
    name = "ferrotel-demo",
    about = "Run Ferrotel end to end on this machine"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Working directory (logs, configs).
    #[arg(long, default_value = ".demo", global = true)]
    dir: PathBuf,
    /// How long to drive traffic before the summary (Ctrl-C ends earlier).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Requests per second sent to the storefront.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Print at most this many spans as they arrive (the summary counts all).
    #[arg(long, default_value_t = 40)]
    show_spans: usize,
    /// Apply `config/samples` alone, without trace propagation: each
    /// service's spans then start traces of their own.
    #[arg(long)]
    no_propagation: bool,
}

impl Args {
    /// The kustomization the demo applies (relative to the repository).
    fn samples(&self) -> &'static str {
        if self.no_propagation {
            "config/samples"
        } else {
            "config/propagation"
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the demo (the default).
    Up,
    /// Remove what a killed demo left behind (its real node: containers, mounts, network namespace, cgroups).
    Down,
    /// Measure opt-in latency (annotation applied -> first span at the
    /// collector) over repeated opt-in/opt-out cycles, with traffic flowing.
    OptinBench {
        /// Opt-in cycles to measure.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Markdown file to write the results to.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}; use e.g. 30s or 2m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in {text:?}; use s or m")),
    }
}

struct Progress {
    step: usize,
    total: usize,
    started: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.step += 1;
        println!(
            "\x1b[1m[{}/{}]\x1b[0m {what} \x1b[2m(+{:.1}s)\x1b[0m",
            self.step,
            self.total,
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    stack::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .init();
    let result = match args.command {
        Some(Cmd::Down) => down(&args.dir),
        Some(Cmd::Up) | None => up(&args).await,
        Some(Cmd::OptinBench { runs, ref out }) => optin_bench(&args, runs, out.as_deref()).await,
    };
    if let Err(error) = result {
        eprintln!("ferrotel-demo: {error}");
        std::process::exit(1);
    }
}

async fn setup(args: &Args, progress: &mut Progress) -> anyhow::Result<Demo> {
    anyhow::ensure!(
        stack::is_root(),
        "the demo needs root: it runs a real node (containerd, kubelet: network namespace, cgroups, mounts) and the probes load eBPF programs (run: sudo make demo)"
    );
    let _ = down(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;

    progress.step(
        "Starting the local cluster: etcd, kube-apiserver, controllers, and a real node (containerd, kubelet, kube-proxy, CoreDNS)",
    );
    let bed_dir = dir.join("testbed");
    let _ = std::fs::remove_dir_all(&bed_dir);
    let bed = TestBed::start(TestBedOptions {
        nodes: 0,
        dir: Some(bed_dir),
        real_node: true,
        ..TestBedOptions::default()
    })
    .await?;
    let client = bed.client();
    println!(
        "      export KUBECONFIG={}   node: {}",
        bed.kubeconfig().display(),
        bed.with_real_node(|n| n.name().to_owned())
    );

    progress.step("Building the images locally (operator, probe, collector, apps) and loading them into the node");
    let images = StackImages::build_and_import(&bed).await?;
    for image in [
        &images.operator,
        &images.probe,
        &images.collector,
        &images.backend,
        &images.frontend,
    ] {
        println!("      {}", image.reference);
    }

    progress.step(&format!(
        "Installing the Helm chart (charts/ferrotel) into {}",
        stack::CHART_NAMESPACE
    ));
    stack::install_chart(&bed, &images, stack::CHART_NAMESPACE).await?;

    // The apps run first, uninstrumented: Ferrotel attaches to what already
    // runs, with no restart.
    progress.step("Starting the sample apps, not instrumented yet: shop/frontend (Python) -> shop/catalogue (Go), as Deployments");
    let _ = bed.kubectl().args(["create", "namespace", SHOP]).output();
    let catalogue = stack::deploy_app(
        &client,
        SHOP,
        &App {
            name: "catalogue".into(),
            image: images.backend.reference.clone(),
            args: vec!["--addr=0.0.0.0:8080".into(), "--error-rate=0.03".into()],
            port: 8080,
            ..App::default()
        },
    )
    .await?;
    let frontend = stack::deploy_app(
        &client,
        SHOP,
        &App {
            name: "frontend".into(),
            image: images.frontend.reference.clone(),
            args: vec![
                "--listen=0.0.0.0:8000".into(),
                format!("--backend={}", catalogue.service_url()),
            ],
            port: 8000,
            labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "storefront".to_owned(),
            )]),
            ..App::default()
        },
    )
    .await?;
    println!(
        "      frontend {}  (pod {})   catalogue {}  (pod {})",
        frontend.addr(),
        frontend.pod,
        catalogue.service_url(),
        catalogue.pod
    );

    let propagation = if args.no_propagation {
        ""
    } else {
        ", ProbeClass tracing allowing trace propagation, which the Instrumentation turns on"
    };
    progress.step(&format!(
        "Applying the samples: kubectl apply --server-side -k {} (namespace {SHOP} opted in, TelemetryCollector {SAMPLES_NS}/{SAMPLE_COLLECTOR}, Instrumentation {SAMPLES_NS}/{SAMPLE_INSTRUMENTATION}{propagation})",
        args.samples()
    ));
    let samples = stack::workspace_root().join(args.samples());
    let applied = Instant::now();
    let out = bed
        .kubectl()
        .args([
            "apply",
            "--server-side",
            "-k",
            &samples.display().to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl apply -k {} failed: {}",
        samples.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("      {line}");
    }

    progress.step(
        "Adding a backend to the sample collector (an otlp exporter to a collector on this host, which the summary reads)",
    );
    let backend = stack::start_backend(&bed).await?;
    let patch = serde_json::json!({"spec": {"config": {
        "exporters": {"otlp/backend": stack::backend_exporter(&backend)},
        "service": {"pipelines": {"traces": {"exporters": ["debug", "otlp/backend"]}}},
    }}});
    let out = bed
        .kubectl()
        .args([
            "patch",
            "telemetrycollector",
            SAMPLE_COLLECTOR,
            "-n",
            SAMPLES_NS,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl patch telemetrycollector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("      backend OTLP: {}", backend.grpc_endpoint());

    progress
        .step("Waiting for the collector and the Go and Python probe pods the operator renders");
    for language in ["go", "python"] {
        stack::wait_probe_ready(&client, SAMPLES_NS, SAMPLE_INSTRUMENTATION, language).await?;
    }
    stack::wait_pod_ready(
        &client,
        SAMPLES_NS,
        &format!(
            "app.kubernetes.io/instance={SAMPLE_COLLECTOR},app.kubernetes.io/component=collector"
        ),
    )
    .await?;
    let pods = bed
        .kubectl()
        .args(["get", "pods", "-A", "-o", "wide"])
        .output()?;
    println!("      $ kubectl get pods -A -o wide");
    for line in String::from_utf8_lossy(&pods.stdout).lines() {
        println!("      {line}");
    }

    Ok(Demo {
        frontend,
        backend,
        bed,
        dir,
        applied,
    })
}

/// Everything the demo runs; dropping it stops it all.
struct Demo {
    frontend: stack::AppPod,
    /// The collector on the host the sample collector forwards to.
    backend: ferrotel_e2e::Collector,
    // Dropped last: the real node (and every pod) and the control plane.
    bed: TestBed,
    dir: PathBuf,
    /// When the samples were applied (the namespace opted in).
    applied: Instant,
}

async fn up(args: &Args) -> anyhow::Result<()> {
    let mut progress = Progress {
        step: 0,
        total: 9,
        started: Instant::now(),
    };
    let demo = tokio::select! {
        demo = setup(args, &mut progress) => demo?,
        _ = tokio::signal::ctrl_c() => {
            println!("\nCtrl-C: stopping what was started so far");
            let _ = down(&args.dir);
            return Ok(());
        }
    };
    let Demo {
        frontend,
        backend: collector,
        bed,
        dir,
        applied,
    } = demo;
    progress.step(&format!(
        "Driving {} req/s to the storefront for {:?} (Ctrl-C to stop early); spans as they arrive:",
        args.rate, args.duration
    ));
    let traffic_addr = frontend.addr();
    let rate = args.rate.max(1);
    let traffic = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let addr = traffic_addr.clone();
            let path = format!("/shop/{}", n % 50);
            tokio::spawn(async move {
                let _ = stack::http_get(&addr, &path).await;
            });
        }
    });
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    let mut shown = 0usize;
    let mut seen = 0usize;
    let mut first_span: Option<Duration> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { println!("\n      Ctrl-C: stopping"); break; }
            () = &mut deadline => break,
            _ = poll.tick() => {
                let spans = collector.spans().unwrap_or_default();
                if first_span.is_none() && spans.iter().any(|s| s.resource_str("k8s.namespace.name") == Some(SHOP)) {
                    first_span = Some(applied.elapsed());
                    println!("      first span {:.1}s after applying the samples (probes started meanwhile)", applied.elapsed().as_secs_f64());
                }
                for span in spans.iter().skip(seen) {
                    if shown < args.show_spans {
                        println!("      {}", describe(span));
                        shown += 1;
                    } else if shown == args.show_spans {
                        println!("      … (further spans counted in the summary)");
                        shown += 1;
                    }
                }
                seen = spans.len();
            }
        }
    }
    traffic.abort();

    progress.step("Summary (server spans per service, from what the collector received)");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = collector.spans().unwrap_or_default();
    print_summary(&spans, first_span, args.samples());
    print_traces(&spans, !args.no_propagation);
    print_edges(&bed.client()).await;
    println!(
        "\nStopping everything (every pod and the real node, the backend, the control plane)…"
    );
    drop(frontend);
    drop(collector);
    drop(bed);
    let _ = down(&dir);
    println!("Done. Logs were in {}", dir.display());
    Ok(())
}

fn describe(span: &Span) -> String {
    let kind = match span.kind {
        2 => "SERVER",
        3 => "CLIENT",
        _ => "INTERNAL",
    };
    let status = span
        .attr_i64("http.response.status_code")
        .map(|c| c.to_string())
        .unwrap_or_else(|| "-".into());
    let ms = span.end_ns.saturating_sub(span.start_ns) as f64 / 1e6;
    format!(
        "{:<11} {:<6} {:<28} {:>3} {:>8.2} ms  pod={} trace={}",
        span.service_name().unwrap_or("?"),
        kind,
        truncate(&span.name, 28),
        status,
        ms,
        span.resource_str("k8s.pod.name").unwrap_or("?"),
        span.trace_id.get(..8).unwrap_or(""),
    )
}

fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        text.to_owned()
    } else {
        text.chars().take(n - 1).collect::<String>() + "…"
    }
}

/// Per-service RED summary of server spans.
fn print_summary(spans: &[Span], first_span: Option<Duration>, samples: &str) {
    let mut by_service: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
    for span in spans.iter().filter(|s| s.kind == 2) {
        by_service
            .entry(span.service_name().unwrap_or("unknown").to_owned())
            .or_default()
            .push(span);
    }
    if by_service.is_empty() {
        println!("      no server spans arrived: see the probe logs in the demo directory");
        return;
    }
    println!(
        "      {:<12} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "service", "requests", "req/s", "errors", "p50 ms", "p90 ms", "p99 ms"
    );
    for (service, spans) in &by_service {
        let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
        let window = (end.saturating_sub(start) as f64 / 1e9).max(1e-3);
        let errors = spans.iter().filter(|s| is_error(s)).count();
        let mut durations: Vec<f64> = spans
            .iter()
            .map(|s| s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6)
            .collect();
        durations.sort_by(f64::total_cmp);
        let q = |p: f64| durations[((durations.len() as f64 - 1.0) * p).round() as usize];
        println!(
            "      {:<12} {:>8} {:>9.1} {:>7.1}% {:>9.2} {:>9.2} {:>9.2}",
            service,
            spans.len(),
            spans.len() as f64 / window,
            100.0 * errors as f64 / spans.len() as f64,
            q(0.50),
            q(0.90),
            q(0.99)
        );
    }
    if let Some(latency) = first_span {
        println!(
            "      first span at the collector {:.1}s after applying {samples} (includes starting the collector and probe pods)",
            latency.as_secs_f64()
        );
    }
}

/// How many storefront requests formed one trace with the catalogue call
/// they made: the storefront's server span, its client span, and the
/// catalogue's server span, child of that client span.
fn print_traces(spans: &[Span], propagation: bool) {
    let front: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == 2 && s.service_name() == Some(STOREFRONT))
        .collect();
    if front.is_empty() {
        return;
    }
    let called: std::collections::HashMap<(&str, &str), &Span> = spans
        .iter()
        .filter(|s| s.kind == 3 && s.service_name() == Some(STOREFRONT))
        .map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), s))
        .collect();
    let joined: std::collections::HashSet<&str> = spans
        .iter()
        .filter(|s| s.kind == 2 && s.service_name() == Some(CATALOGUE))
        .filter(|s| called.contains_key(&(s.trace_id.as_str(), s.parent_span_id.as_str())))
        .map(|s| s.trace_id.as_str())
        .collect();
    let whole = front
        .iter()
        .filter(|s| joined.contains(s.trace_id.as_str()))
        .count();
    println!(
        "\n      Traces: {whole} of {} storefront requests form one trace with the catalogue call they made ({:.1} %)",
        front.len(),
        100.0 * whole as f64 / front.len() as f64
    );
    if propagation && whole == 0 {
        println!(
            "      none joined: is propagation refused on the node? `kubectl ferrotel status`, or the probe logs in the demo directory"
        );
    } else if !propagation {
        println!("      (propagation off: --no-propagation)");
    }
}

/// The service map as the probes serve it (`traces_service_graph_*` on
/// their /metrics, what Prometheus would scrape): every edge with its
/// requests, error share and p50/p90/p99.
async fn print_edges(client: &kube::Client) {
    let mut expositions = Vec::new();
    match stack::probe_endpoints(client, SAMPLES_NS, SAMPLE_INSTRUMENTATION).await {
        Ok(probes) => {
            for (language, addr) in probes {
                match stack::http_get(&addr, "/metrics").await {
                    Ok((200, body)) => expositions.push(body),
                    Ok((code, _)) => {
                        println!("      the {language} probe's /metrics answered {code}")
                    }
                    Err(e) => println!("      the {language} probe's /metrics: {e}"),
                }
            }
        }
        Err(e) => println!("      listing the probe pods: {e}"),
    }
    let graph =
        ferrotel_e2e::graph::service_graph_from_prometheus(expositions.iter().map(String::as_str));
    println!("\n      Service map (edges the probes computed from their spans):");
    if graph.is_empty() {
        println!("      no edges: see the probe logs in the demo directory");
        return;
    }
    for line in ferrotel_e2e::graph::edge_table(&graph) {
        println!("      {line}");
    }
}

fn is_error(span: &Span) -> bool {
    span.status_code == 2
        || span
            .attr_i64("http.response.status_code")
            .is_some_and(|c| c >= 500)
}

/// Removes leftovers of a killed demo: a real node whose owner died
/// (containers, mounts, network namespace, cgroups) and the demo directory.
fn down(dir: &Path) -> anyhow::Result<()> {
    ferrotel_e2e::node::reap_stale();
    let _ = std::fs::remove_dir_all(dir.join("testbed"));
    // The node-wide join map the probes pin, which outlives them by design
    // (docs/propagation.md): the demo's node is this machine.
    let _ = std::fs::remove_dir_all(PROPAGATION_PINS);
    Ok(())
}

/// What `config/samples` creates (the demo reads it back by these names).
const SAMPLES_NS: &str = "otel";
const SAMPLE_COLLECTOR: &str = "otel-collector";
const SAMPLE_INSTRUMENTATION: &str = "default";
/// The samples' opted-in application namespace.
const SHOP: &str = "shop";
/// The sample apps' service names.
const STOREFRONT: &str = "storefront";
const CATALOGUE: &str = "catalogue";
/// Where the probes pin the node-wide propagation maps by default.
const PROPAGATION_PINS: &str = ferrotel_api::probe_config::PropagationConfig::DEFAULT_PIN_DIR;

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Spans of the shop namespace whose request started at or after `unix_ns`.
fn shop_spans_since(collector: &ferrotel_e2e::Collector, unix_ns: u64) -> usize {
    collector
        .spans()
        .unwrap_or_default()
        .iter()
        .filter(|s| s.resource_str("k8s.namespace.name") == Some(SHOP) && s.start_ns >= unix_ns)
        .count()
}

fn shop_spans(collector: &ferrotel_e2e::Collector) -> usize {
    collector
        .spans()
        .unwrap_or_default()
        .iter()
        .filter(|s| s.resource_str("k8s.namespace.name") == Some(SHOP))
        .count()
}

async fn optin_bench(args: &Args, runs: usize, out: Option<&Path>) -> anyhow::Result<()> {
    let mut progress = Progress {
        step: 0,
        total: 8,
        started: Instant::now(),
    };
    let demo = tokio::select! {
        demo = setup(args, &mut progress) => demo?,
        _ = tokio::signal::ctrl_c() => {
            let _ = down(&args.dir);
            return Ok(());
        }
    };
    let client = demo.bed.client();
    progress.step(&format!(
        "Measuring opt-in latency over {runs} cycles, traffic at {} req/s",
        args.rate
    ));
    let traffic_addr = demo.frontend.addr();
    let rate = args.rate.max(1);
    let traffic = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            n += 1;
            let addr = traffic_addr.clone();
            tokio::spawn(async move {
                let _ = stack::http_get(&addr, &format!("/shop/{}", n % 50)).await;
            });
        }
    });
    let mut latencies = Vec::new();
    for run in 1..=runs {
        // The samples opt the namespace in: opt out first and wait until
        // spans stop (3 s without a new one).
        stack::annotate_namespace(&client, SHOP, "ferrotel.io/instrument", None).await?;
        let mut last = shop_spans(&demo.backend);
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = shop_spans(&demo.backend);
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        let start = Instant::now();
        let start_unix_ns = unix_now_ns();
        stack::annotate_namespace(&client, SHOP, "ferrotel.io/instrument", Some("true")).await?;
        // Only a request that started after the annotation counts: a span
        // from before the opt-out that an exporter delivers late (retrying
        // after a failed export) would otherwise end a run early.
        let latency = loop {
            if shop_spans_since(&demo.backend, start_unix_ns) > 0 {
                break start.elapsed();
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "run {run}: no span within 60 s of the annotation"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!("      run {run:>2}: {:.2}s", latency.as_secs_f64());
        latencies.push(latency);
    }
    traffic.abort();
    let mut sorted = latencies.clone();
    sorted.sort();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2
    };
    let secs = |d: &Duration| format!("{:.2}", d.as_secs_f64());
    let report = format!(
        "# Opt-in latency\n\n\
Time from `kubectl annotate namespace shop ferrotel.io/instrument=true` (measured from just before the equivalent API patch)\n\
to the first span of that namespace, for a request that started after the annotation, in the\n\
collector's file exporter output, with the\n\
storefront receiving {rate} req/s throughout. Each run first removes the annotation and waits\n\
until spans stop (3 s quiet).\n\n\
| | seconds |\n|---|---|\n| median | {} |\n| min | {} |\n| max | {} |\n| runs | {} |\n\n\
Per run: {}\n\n\
Goal: median ≤ 5 s.\n\n\
What the time is made of: the probe's namespace watch event (immediate reconcile, no /proc\n\
rescan wait for already-running processes), attaching the front-end, the first request\n\
after that, the probe's export interval (`exporter.scheduledDelayMillis`, rendered by the\n\
operator), the collector's batch processor (200 ms here) and the file exporter flush (100 ms).\n\n\
Machine: {}, {} CPUs (shared with other work while measured). Command: `{}`.\n",
        secs(&median),
        secs(&sorted[0]),
        secs(sorted.last().expect("at least one run")),
        latencies.len(),
        latencies.iter().map(secs).collect::<Vec<_>>().join(", "),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| format!("Linux {}", r.trim()))
            .unwrap_or_default(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::args().collect::<Vec<_>>().join(" "),
    );
    println!("\n{report}");
    if let Some(out) = out {
        std::fs::write(out, &report)?;
        println!("written to {}", out.display());
    }
    let dir = demo.dir.clone();
    drop(demo);
    let _ = down(&dir);
    Ok(())
}
