//! `kubectl ferrotel`: the terminal view of a traced cluster.
//!
//! A kubectl plugin (`kubectl-ferrotel` on the `PATH` makes `kubectl
//! ferrotel …` work) that also runs on its own. It talks only to the API
//! server: custom resources and pods directly, the probes' HTTP endpoints
//! (`/metrics`, `/debug/processes`, `/debug/tap`) through the API server's
//! pod proxy — no port-forward, no network path to the nodes, no
//! Prometheus or tracing backend needed. With `--prometheus URL` the
//! metrics come from Prometheus instead. User guide: `docs/cli.md`.
//!
//! Layout: [`args`] (the command line), [`cluster`] (client, reads, probe
//! proxy), [`source`] (windows of metrics from probes or Prometheus), one
//! module per command whose judging and rendering are pure ([`status`],
//! [`why`], [`stat`] with [`red`], [`edges`], [`tap`], [`resources`]), and
//! [`output`] (tables, colors, progress line).
#![forbid(unsafe_code)]

pub mod args;
pub mod cluster;
pub mod edges;
pub mod error;
pub mod histogram;
pub mod output;
pub mod promtext;
pub mod red;
pub mod resources;
pub mod source;
pub mod stat;
pub mod status;
pub mod tap;
pub mod why;
pub mod workload;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use ferrotel_api::probe_endpoints::TapFilter;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;

use args::{Cli, ColorChoice, Command, Global};
use cluster::{Cluster, ConnectOptions};
use error::CliError;
use output::{Format, Progress, Style};
use source::{MetricSource, Prometheus, Wants, Window};

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let global = cli.global;
    let style = match global.color {
        ColorChoice::Auto => Style::detect(),
        ColorChoice::Always => Style { color: true },
        ColorChoice::Never => Style::plain(),
    };
    if let Command::Completion(args) = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        let mut text = Vec::new();
        clap_complete::generate(args.shell, &mut command, "kubectl-ferrotel", &mut text);
        return write_out(&String::from_utf8_lossy(&text));
    }
    let cluster = Cluster::connect(&ConnectOptions {
        kubeconfig: global.kubeconfig.clone(),
        context: global.context.clone(),
        request_timeout: Some(global.request_timeout),
    })
    .await?;
    let namespace = if global.all_namespaces {
        None
    } else {
        Some(
            global
                .namespace
                .clone()
                .unwrap_or_else(|| cluster.default_namespace.clone()),
        )
    };
    let format = global.output;
    match cli.command {
        Command::Completion(_) => Ok(()),
        Command::Status => {
            // The install is cluster-wide: -n narrows it only when given.
            let report = status::gather(&cluster, global.namespace.as_deref()).await?;
            write_out(&status::render(&report, format, &style))
        }
        Command::Why(args) => {
            let ns = namespace
                .ok_or_else(|| CliError::Usage("why needs one namespace: use -n, not -A".into()))?;
            let inputs = why::gather(&cluster, &ns, &args.target).await?;
            let reports: Vec<why::WhyReport> = inputs.iter().map(why::judge).collect();
            let text = match &args.target {
                // One pod: its report alone, as before workloads were asked.
                why::Target::Pod(_) => reports
                    .iter()
                    .map(|report| why::render(report, format, &style))
                    .collect(),
                why::Target::Workload(workload) => why::render_workload(
                    &why::WorkloadReport::new(&ns, workload, reports),
                    format,
                    &style,
                ),
            };
            write_out(&text)
        }
        Command::Stat(args) => {
            let (target, mut source) = measured(
                &cluster,
                &global,
                namespace.as_deref(),
                args.workload.as_deref(),
            )
            .await?;
            let window = args.window;
            let live = window.watch && !format.is_structured() && std::io::stdout().is_terminal();
            let mut frames = 0u64;
            repeat(
                &mut source,
                window.window,
                crate::red::wants(),
                window.watch,
                window.iterations,
                |w| {
                    let frame = stat::StatFrame::new(&w, args.by, &target.scope);
                    warn_failures(&frame.failures);
                    frames += 1;
                    let mut text = if window.watch && format.is_structured() {
                        stat::render_stream(format, &frame)
                    } else {
                        stat::render(&frame, format, &style)
                    };
                    if frame.rows.is_empty()
                        && !format.is_structured()
                        && let Some(hint) = target.not_opted_in()
                    {
                        text.push_str(&format!("{hint}\n"));
                    }
                    if live {
                        text = format!("\x1b[H\x1b[2J{text}");
                    } else if window.watch && !format.is_structured() && frames > 1 {
                        text = format!("\n{text}");
                    }
                    write_out(&text)
                },
            )
            .await
        }
        Command::Top(args) => {
            let (target, mut source) = measured(
                &cluster,
                &global,
                namespace.as_deref(),
                args.workload.as_deref(),
            )
            .await?;
            let live = !format.is_structured() && std::io::stdout().is_terminal();
            repeat(
                &mut source,
                args.interval,
                crate::red::wants(),
                true,
                args.iterations,
                |w| {
                    let mut frame = stat::StatFrame::new(&w, args.by, &target.scope);
                    crate::red::sort(&mut frame.rows, args.sort);
                    stat::truncate(&mut frame.rows, args.rows);
                    warn_failures(&frame.failures);
                    let text = if format.is_structured() {
                        stat::render_stream(format, &frame)
                    } else {
                        let header = stat::top_header(&frame, &target.scope, args.sort, &style);
                        let body = stat::render(&frame, format, &style);
                        if live {
                            format!("\x1b[H\x1b[2J{header}\n\n{body}")
                        } else {
                            format!("{header}\n{body}\n")
                        }
                    };
                    write_out(&text)
                },
            )
            .await
        }
        Command::Edges(args) => {
            let target = stat::target(&cluster, namespace.as_deref(), None, None).await?;
            // Edges leave the namespace: every probe can see a caller of it.
            let target = stat::Target {
                probes: cluster.probe_pods().await?,
                scope: crate::red::Scope {
                    workload: args.workload.clone(),
                    ..target.scope
                },
                ..target
            };
            let peers = peers(&cluster).await;
            let mut source = metric_source(&cluster, &global, &target).await?;
            let window = args.window;
            repeat(
                &mut source,
                window.window,
                edges::wants(),
                window.watch,
                window.iterations,
                |w| {
                    let frame = edges::edges(&w, &target.scope, &peers);
                    warn_failures(&frame.failures);
                    let text = if window.watch && format.is_structured() {
                        stat::render_stream(format, &frame)
                    } else {
                        edges::render(&frame, format, &style)
                    };
                    write_out(&if window.watch && !format.is_structured() {
                        format!("{text}\n")
                    } else {
                        text
                    })
                },
            )
            .await
        }
        Command::Resources(args) => {
            let (target, mut source) = measured(
                &cluster,
                &global,
                namespace.as_deref(),
                args.workload.as_deref(),
            )
            .await?;
            let window = args.window;
            repeat(
                &mut source,
                window.window,
                resources::wants(),
                window.watch,
                window.iterations,
                |w| {
                    if !resources::has_data(&w) {
                        return Err(CliError::NoData {
                            what: "no pod resources",
                            detail: format!(
                                "the {} expose no k8s_pod_* metrics; they come with a probe version that samples pod resources (docs/cli.md#resources)",
                                w.source
                            ),
                        });
                    }
                    let frame = resources::rows(&w, &target.scope);
                    warn_failures(&frame.failures);
                    let text = if window.watch && format.is_structured() {
                        stat::render_stream(format, &frame)
                    } else {
                        resources::render(&frame, format, &style)
                    };
                    write_out(&text)
                },
            )
            .await
        }
        Command::Tap(args) => tap(&cluster, &global, namespace, args, format, &style).await,
    }
}

async fn tap(
    cluster: &Cluster,
    global: &Global,
    namespace: Option<String>,
    args: args::TapArgs,
    format: Format,
    style: &Style,
) -> Result<(), CliError> {
    let (workload, pod) = match args.target.as_deref() {
        Some(t) if t.starts_with("pod/") || t.starts_with("po/") || t.starts_with("pods/") => {
            (None, t.split_once('/').map(|(_, n)| n.to_owned()))
        }
        other => (other.map(str::to_owned), None),
    };
    let mut target = stat::target(
        cluster,
        namespace.as_deref(),
        global.selector.as_deref(),
        workload.as_deref(),
    )
    .await?;
    if let Some(pod) = &pod {
        target
            .pods
            .retain(|p| p.metadata.name.as_deref() == Some(pod.as_str()));
        let nodes: Vec<String> = target
            .pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        target.probes.retain(|p| nodes.contains(&p.node));
    }
    let where_ = namespace
        .as_deref()
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default();
    if let Some(t) = &args.target
        && target.pods.is_empty()
    {
        return Err(CliError::NotFound {
            kind: if pod.is_some() { "pod" } else { "workload" },
            name: t.clone(),
            namespace: namespace.clone(),
        });
    }
    if target.probes.is_empty() {
        return Err(CliError::NoProbes {
            detail: format!(
                "no probe runs on the nodes of the pods{where_} ({} pods)",
                target.pods.len()
            ),
        });
    }
    if let (Some(ns), Some(hint)) = (&namespace, target.not_opted_in()) {
        return Err(CliError::NotOptedIn {
            namespace: ns.clone(),
            detail: hint,
        });
    }
    let named = args.target.is_some() || global.selector.is_some();
    let filter = TapFilter {
        namespace: namespace.clone(),
        pods: if named {
            target
                .pods
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect()
        } else {
            Vec::new()
        },
        service: args.service.clone(),
        route: args.route.clone(),
        method: args.method.clone(),
    };
    let mut progress = Progress::new();
    progress.set(&format!("opening a tap on {} probes…", target.probes.len()));
    let (streams, failures) = tap::open(cluster, &target.probes, &filter).await?;
    progress.set(&format!(
        "tapping {} probes{where_}; waiting for requests (Ctrl-C quits)…",
        streams.len()
    ));
    warn_failures(&failures);
    tap::follow(streams, args.max, args.duration, |line| {
        let (out, err) = tap::render_line(line, format, style);
        if !out.is_empty() {
            progress.clear();
            write_out(&out)?;
        }
        if !err.is_empty() {
            progress.clear();
            eprint(&err);
        }
        Ok(())
    })
    .await?;
    Ok(())
}

/// Pod IPs and Services for naming edges; a user who may not list them
/// cluster-wide gets addresses instead of names.
async fn peers(cluster: &Cluster) -> edges::Peers {
    let pods: Vec<Pod> = cluster
        .list(None, &ListParams::default())
        .await
        .unwrap_or_default();
    let services: Vec<Service> = cluster
        .list(None, &ListParams::default())
        .await
        .unwrap_or_default();
    edges::Peers::new(&pods, &services)
}

/// The pods, probes and metric source of `stat`, `top` and `resources`.
async fn measured(
    cluster: &Cluster,
    global: &Global,
    namespace: Option<&str>,
    workload: Option<&str>,
) -> Result<(stat::Target, MetricSource), CliError> {
    let target = stat::target(cluster, namespace, global.selector.as_deref(), workload).await?;
    let source = metric_source(cluster, global, &target).await?;
    Ok((target, source))
}

async fn metric_source(
    cluster: &Cluster,
    global: &Global,
    target: &stat::Target,
) -> Result<MetricSource, CliError> {
    if let Some(url) = &global.prometheus {
        return Ok(MetricSource::prometheus(Prometheus::new(
            url,
            global.request_timeout,
        )?));
    }
    if target.probes.is_empty() {
        let all = cluster.probe_pods().await?;
        let detail = if all.is_empty() {
            "the cluster runs no probe pod (label app.kubernetes.io/name=ferrotel-probe); create an Instrumentation".to_owned()
        } else if target.pods.is_empty() {
            "no pod matches (check -n, -l and the workload name)".to_owned()
        } else {
            let nodes: std::collections::BTreeSet<String> = target
                .pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect();
            format!(
                "no probe runs on the nodes of these pods ({})",
                nodes.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        return Err(CliError::NoProbes { detail });
    }
    Ok(MetricSource::probes(cluster.clone(), target.probes.clone()))
}

/// Calls `frame` with each window: once, or until `iterations` or Ctrl-C
/// with `watch`.
async fn repeat(
    source: &mut MetricSource,
    length: Duration,
    wants: Wants<'_>,
    watch: bool,
    iterations: Option<u64>,
    mut frame: impl FnMut(Window) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let mut progress = Progress::new();
    let mut done = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let window = tokio::select! {
            window = source.next(length, wants, &mut progress) => window?,
            _ = &mut ctrl_c => return Ok(()),
        };
        frame(window)?;
        done += 1;
        if !watch || iterations.is_some_and(|n| done >= n) {
            return Ok(());
        }
    }
}

fn warn_failures(failures: &[String]) {
    for failure in failures {
        eprint(&format!("warning: probe {failure}\n"));
    }
}

fn eprint(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes to stdout; a closed pipe (`| head`) is [`CliError::Output`] with
/// `BrokenPipe`, which `main` treats as a quiet end.
pub fn write_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}
