//! Shared harness of the Go probe tests: the Go toolchain matrix, building
//! the test targets (e2e/apps/go), running them, and running the probe
//! runtime with the Go front-end against the real collector.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use ferrotel_api::probe_config::ProbeConfig;
use ferrotel_e2e::{Collector, Span};
use ferrotel_probe::config::{Cli, RuntimeConfig};
use ferrotel_probe::golang::GoFrontend;
use ferrotel_probe::runtime::{self, TargetSource};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(90);

/// A Go toolchain of the test matrix.
#[derive(Clone, Copy, Debug)]
pub struct Toolchain {
    pub name: &'static str,
    pub go: &'static str,
}

/// The machine's Go and Debian's (bookworm-backports, installed by
/// `make tools`).
pub const TOOLCHAINS: [Toolchain; 2] = [
    Toolchain {
        name: "machine Go (/usr/local/go)",
        go: "/usr/local/go/bin/go",
    },
    Toolchain {
        name: "Debian golang-1.23",
        go: "/usr/lib/go-1.23/bin/go",
    },
];

/// The built test targets of one toolchain.
#[derive(Clone, Debug)]
pub struct Apps {
    pub toolchain: Toolchain,
    pub dir: PathBuf,
    pub go_version: String,
}

impl Apps {
    pub fn bin(&self, app: &str) -> PathBuf {
        self.dir.join(app)
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("probe/ has a parent")
        .to_owned()
}

/// Builds (or finds up to date) every test target with `toolchain`, into
/// `$FERROTEL_CACHE/go-apps/<go version>/`. Fails the test if the toolchain
/// is missing.
pub fn apps(toolchain: Toolchain) -> Apps {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        Path::new(toolchain.go).is_file(),
        "{} is missing at {}: run `make tools` (installs golang-1.23-go from bookworm-backports)",
        toolchain.name,
        toolchain.go
    );
    let version = Command::new(toolchain.go)
        .args(["env", "GOVERSION"])
        .output()
        .expect("run go env");
    let go_version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let cache = std::env::var_os("FERROTEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/ferrotel")
        });
    let dir = cache.join("go-apps").join(&go_version);
    let status = Command::new(repo_root().join("e2e/apps/go/build.sh"))
        .arg(toolchain.go)
        .arg(&dir)
        .status()
        .expect("run e2e/apps/go/build.sh");
    assert!(
        status.success(),
        "building the Go test targets with {} failed",
        toolchain.name
    );
    Apps {
        toolchain,
        dir,
        go_version,
    }
}

/// A running Go test target.
#[derive(Debug)]
pub struct GoApp {
    child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl GoApp {
    /// Starts `bin` with `args` and waits for its "LISTENING host:port" line.
    pub fn start(bin: &Path, args: &[&str]) -> GoApp {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the LISTENING line");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{} printed {line:?} instead of LISTENING host:port",
                    bin.display()
                )
            });
        GoApp {
            child,
            addr,
            name: bin.display().to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Fails the test if the target died (e.g. crashed under the probe).
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} (pid {}) exited under the probe: {status}",
                self.name,
                self.child.id()
            );
        }
    }
}

impl Drop for GoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The probe runtime with the Go front-end, exporting to `collector`.
pub struct Probe {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    pub metrics_url: String,
}

impl Probe {
    /// Starts the probe for `pids` and `exe_globs`, and waits until
    /// `expect_attached` processes are instrumented.
    pub async fn start(
        collector: &Collector,
        pids: &[u32],
        exe_globs: &[&str],
        expect_attached: usize,
    ) -> Probe {
        let mut file = ProbeConfig::default();
        file.exporter.endpoint = collector.grpc_url();
        file.exporter.scheduled_delay_millis = 200;
        let metrics_port = ferrotel_e2e::free_port();
        let mut args = vec![
            "ferrotel-probe".to_owned(),
            "--language".into(),
            "go".into(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--rescan-millis".into(),
            "100".into(),
        ];
        for pid in pids {
            args.extend(["--pid".to_owned(), pid.to_string()]);
        }
        for glob in exe_globs {
            args.extend(["--exe-path".to_owned(), (*glob).to_owned()]);
        }
        let cli = Cli::try_parse_from(&args).expect("valid probe flags");
        let config = RuntimeConfig::resolve(&cli, file, &|_| None).expect("valid probe config");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(runtime::run(
            config,
            GoFrontend::new(),
            TargetSource::Standalone,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut probe = Probe {
            stop: Some(stop_tx),
            task: Some(task),
            metrics_url: format!("http://127.0.0.1:{metrics_port}/metrics"),
        };
        probe.wait_attached(expect_attached).await;
        probe
    }

    /// The probe's /metrics text.
    pub async fn metrics(&self) -> String {
        match http_client().get(&self.metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => format!("(no /metrics: {e})"),
        }
    }

    /// Waits until the attached-processes gauge reads `n`; fails with the
    /// probe's error if it stopped (e.g. eBPF could not be loaded).
    pub async fn wait_attached(&mut self, n: usize) {
        let line = format!("ferrotel_probe_attached_processes{{language=\"go\"}} {n}");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(task) = &self.task
                && task.is_finished()
            {
                let result = self.task.take().expect("task").await;
                panic!(
                    "the Go probe stopped before attaching (it needs root and a kernel with BTF and uprobes): {result:?}"
                );
            }
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the Go probe did not attach {n} processes in time:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops gracefully (flushing every span); returns the probe's /metrics
    /// text from just before the stop, for failure messages.
    pub async fn stop(mut self) -> String {
        let metrics = self.metrics().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("probe still running");
        let result = tokio::time::timeout(WAIT, task)
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

/// Spans of process `pid`.
pub fn of_pid(pid: u32) -> impl Fn(&Span) -> bool {
    let pid = pid.to_string();
    move |s: &Span| s.resource_str("process.pid") == Some(pid.as_str())
}

pub const SERVER: i64 = 2;
pub const CLIENT: i64 = 3;

/// An HTTP client for the test targets. reqwest is built without a bundled
/// crypto provider (the workspace uses ring only), so install ring first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Sends `n` GETs to `url` (optionally with headers) and returns the longest
/// round trip seen: every server span must be shorter.
pub async fn get_n(
    client: &reqwest::Client,
    url: &str,
    n: usize,
    headers: &[(&str, &str)],
) -> Duration {
    let mut longest = Duration::ZERO;
    for i in 0..n {
        let started = std::time::Instant::now();
        let mut request = client.get(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} #{i}: {e}"));
        let _ = response.bytes().await;
        longest = longest.max(started.elapsed());
    }
    longest
}
