//! `ferrotel-probe`: loads eBPF programs and exports OpenTelemetry spans
//! and RED metrics. A thin wrapper over [`ferrotel_probe::runtime`].

use std::process::ExitCode;

use clap::Parser;
use ferrotel_probe::config::{Cli, RuntimeConfig};
use ferrotel_probe::languages::LanguageFrontend;
use ferrotel_probe::runtime;
use tracing_subscriber::EnvFilter;

fn init_logging(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("ferrotel-probe: invalid log filter {filter:?} ({e}); using \"info\"");
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    // First, before any thread exists: one malloc arena for every thread
    // (see `ferrotel_memory::use_one_arena`).
    ferrotel_memory::use_one_arena();
    let cli = Cli::parse();
    let config = match RuntimeConfig::load(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ferrotel-probe: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_filter, config.log_json);
    if config.probe.targets.kubernetes
        && let Err(e) = ferrotel_probe::preflight::check_host_pid_namespace()
    {
        tracing::error!(error = %e, "ferrotel-probe cannot run");
        return ExitCode::FAILURE;
    }
    // Before the runtime starts threads: a mount namespace of our own is
    // per thread until then (see tracefs.rs). Only a set that attaches
    // syscall tracepoints needs tracefs; uprobes and BTF tracepoints do not.
    if ferrotel_probe::languages::needs_tracefs(config.language) {
        match ferrotel_probe::tracefs::ensure() {
            Ok(ferrotel_probe::tracefs::Tracefs::Found(path)) => {
                tracing::debug!(path = %path.display(), "Found tracefs");
            }
            Ok(ferrotel_probe::tracefs::Tracefs::MountedPrivately(path)) => {
                tracing::info!(
                    path = %path.display(),
                    "Mounted tracefs in the probe's own mount namespace (the host has none mounted)"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "ferrotel-probe cannot attach tracepoints");
                return ExitCode::FAILURE;
            }
        }
    }
    // Also before threads: a pod's own cgroup mounts hide the other pods'
    // cgroups, which pod resources and TCP health read (views/host_cgroups.rs).
    let views = &config.probe.views;
    if config.probe.targets.kubernetes && (views.pod_resources.enabled || views.tcp_health.enabled)
    {
        use ferrotel_probe::views::host_cgroups::{self, HostCgroups};
        match host_cgroups::ensure() {
            Ok(HostCgroups::Visible) => {
                tracing::debug!("The host's cgroup hierarchies are visible")
            }
            Ok(HostCgroups::HostRoot) => {
                tracing::debug!("Reading the host's cgroup hierarchies under /proc/1/root")
            }
            Ok(HostCgroups::MountedPrivately(mounts)) => tracing::info!(
                mounts = ?mounts,
                "Mounted the host's cgroup hierarchies in the probe's own mount namespace (its container's mounts show only its own cgroup)"
            ),
            // Tracing goes on; the views say what they lack.
            Err(e) => {
                tracing::warn!(error = %e, "Pod resources and pod network counters are limited")
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime::worker_threads(
            std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "Cannot start the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: RuntimeConfig) -> ExitCode {
    let targets = ferrotel_probe::targets::kubernetes::target_source(&config);
    let stop = runtime::termination_signal();
    let result = runtime::run(config, LanguageFrontend, targets, stop).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ferrotel-probe failed");
            ExitCode::FAILURE
        }
    }
}
