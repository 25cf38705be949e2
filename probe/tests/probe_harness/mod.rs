//! The probe runtime in-process, as the language harnesses (`go_common`,
//! `python_common`) start it: flags and a config file as the binary would
//! get them, `/metrics` on a free port, a graceful stop that flushes.
//!
//! Every test binary that includes this module also gets the tracefs that
//! `ferrotel-probe` gives itself ([`ferrotel_probe::tracefs::ensure`]):
//! these tests run the probe in-process, so they do what its `main` does,
//! before any thread exists — a mount namespace is per thread until then,
//! and the test harness starts its threads before any test runs. A
//! constructor (`.init_array`) runs earlier, on the only thread. On a host
//! with tracefs mounted it does nothing; the host's mount table never
//! changes either way (the mount lives in the test process's own mount
//! namespace and goes away with it).
#![allow(dead_code)]

use std::time::Duration;

use clap::Parser;
use ferrotel_api::probe_config::{Language, ProbeConfig};
use ferrotel_probe::config::{Cli, RuntimeConfig};
use ferrotel_probe::frontend::Frontend;
use ferrotel_probe::languages::LanguageFrontend;
use ferrotel_probe::runtime;
use ferrotel_probe::targets::TargetSource;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

// SAFETY: `.init_array` entries are called once by the loader before `main`
// with no arguments, which matches `extern "C" fn()`; the function only
// makes syscalls and file reads and never unwinds (errors are printed, and
// the test that needs tracefs then fails with aya's own error).
#[used]
#[unsafe(link_section = ".init_array")]
static PRIVATE_TRACEFS: extern "C" fn() = private_tracefs;

extern "C" fn private_tracefs() {
    if let Err(e) = ferrotel_probe::tracefs::ensure() {
        eprintln!("ferrotel probe tests: {e}");
    }
}

/// How long the harness waits for the probe to attach or to stop.
pub const PROBE_WAIT: Duration = Duration::from_secs(90);

/// A probe running in this test process.
pub struct Probe {
    language: Language,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    pub metrics_url: String,
}

impl Probe {
    /// Starts the probe runtime for `language` with target flags `targets`
    /// (e.g. `("--pid", "42")`), exporting to `endpoint` (OTLP/gRPC URL)
    /// every 200 ms, with the config file adjusted by `edit`.
    pub fn launch(
        language: Language,
        endpoint: &str,
        targets: &[(&str, String)],
        edit: impl FnOnce(&mut ProbeConfig),
    ) -> Probe {
        Self::launch_frontend(language, LanguageFrontend, endpoint, targets, edit)
    }

    /// [`Probe::launch`] with another front-end than the language's program
    /// set (a synthetic one, for tests of the runtime itself).
    pub fn launch_frontend(
        language: Language,
        frontend: impl Frontend,
        endpoint: &str,
        targets: &[(&str, String)],
        edit: impl FnOnce(&mut ProbeConfig),
    ) -> Probe {
        ferrotel_e2e::stack::install_crypto_provider();
        let mut file = ProbeConfig::default();
        file.exporter.endpoint = endpoint.to_owned();
        file.exporter.scheduled_delay_millis = 200;
        edit(&mut file);
        let metrics_port = ferrotel_e2e::free_port();
        let mut args = vec![
            "ferrotel-probe".to_owned(),
            "--language".into(),
            language.to_string(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--rescan-millis".into(),
            "100".into(),
        ];
        for (flag, value) in targets {
            args.extend([(*flag).to_owned(), value.clone()]);
        }
        let cli = Cli::try_parse_from(&args).expect("valid probe flags");
        let config = RuntimeConfig::resolve(&cli, file, &|_| None).expect("valid probe config");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime::run(
            config,
            frontend,
            TargetSource::Standalone,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Probe {
            language,
            stop: Some(stop_tx),
            task: Some(task),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        }
    }

    /// The probe's /metrics text.
    pub async fn metrics(&self) -> String {
        match reqwest::get(&self.metrics_url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("(no /metrics: {e})"),
        }
    }

    /// The value of the first sample whose line starts with `prefix`.
    pub fn metric(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Sum of every sample whose line starts with `prefix` (a metric name
    /// and the start of its labels), 0 if there is none.
    pub fn metric_sum(text: &str, prefix: &str) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the attached-processes gauge satisfies `wanted` (`what`
    /// says how, for the failure message); fails with the probe's error if
    /// it stopped (e.g. eBPF could not be loaded).
    pub async fn wait_attached_until(&mut self, what: &str, wanted: impl Fn(f64) -> bool) {
        let gauge = format!(
            "ferrotel_probe_attached_processes{{language=\"{}\"}}",
            self.language
        );
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        loop {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.task.take().expect("task").await;
                panic!(
                    "the {} probe stopped before attaching (it needs root, a kernel with BTF, and uprobes or syscall tracepoints): {result:?}",
                    self.language
                );
            }
            let text = self.metrics().await;
            if Self::metric(&text, &format!("{gauge} ")).is_some_and(&wanted) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {} probe did not attach {what} in time:\n{text}",
                self.language
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn assert_running(&self) {
        assert!(
            self.task.as_ref().is_some_and(|t| !t.is_finished()),
            "the probe must still be running"
        );
    }

    /// Stops gracefully (flushing every span and the metrics); returns the
    /// probe's own `ferrotel_probe_*` metrics from just before the stop,
    /// for failure messages.
    pub async fn stop(mut self) -> String {
        let metrics = self.metrics().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("probe still running");
        let result = tokio::time::timeout(PROBE_WAIT, task)
            .await
            .expect("probe stops in time")
            .expect("probe task");
        result.expect("the probe returns Ok after a graceful stop");
        metrics
            .lines()
            .filter(|l| l.starts_with("ferrotel_probe_"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
