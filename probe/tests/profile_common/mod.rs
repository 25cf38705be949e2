//! Shared harness of the profiler tests: a profiler task on real eBPF,
//! fed targets directly, and the profiles it stores.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrotel_api::probe_config::ProfilingConfig;
use ferrotel_probe::health::Health;
use ferrotel_probe::profile::model::{FrameKind, Profile};
use ferrotel_probe::profile::store::Selector;
use ferrotel_probe::profile::{Profiler, ProfilerHandle};
use ferrotel_probe::targets::{ProcessTarget, TargetEvent, TargetPublisher, target_channel};
use ferrotel_probe::telemetry::clock::ClockOffsets;
use ferrotel_probe::telemetry::resource::ResourceRegistry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(120);

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the profiler tests load eBPF programs and open perf events: run them as root (sudo)"
    );
}

/// A process killed on drop.
pub struct Target {
    pub child: Child,
}

impl Target {
    /// Starts `argv` and waits for its first stdout line to start with `ready`.
    pub fn start(argv: &[&str], ready: &str) -> Target {
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        assert!(
            line.starts_with(ready),
            "{argv:?} printed {line:?} instead of {ready}"
        );
        Target { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running profiler.
pub struct Running {
    pub handle: ProfilerHandle,
    pub publisher: TargetPublisher,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn start(frequency_hz: u32) -> Running {
        require_root();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let config = ProfilingConfig {
            enabled: true,
            frequency_hz,
            export_interval_seconds: 1,
            kernel_stacks: true,
        };
        let (profiler, handle) = Profiler::new(
            config,
            None,
            ResourceRegistry::new(Default::default()),
            ClockOffsets::measure(),
            Health::new(),
        );
        let (publisher, targets) = target_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(profiler.run(targets, stop.clone()));
        Running {
            handle,
            publisher,
            stop,
            task: Some(task),
        }
    }

    pub fn profile(&self, pid: u32) {
        self.publisher.publish(TargetEvent::Added(ProcessTarget {
            pid,
            exe: PathBuf::from(format!("/proc/{pid}/exe")),
            reason: "pid",
        }));
    }

    /// Waits until `pid` has at least `samples` samples stored, and returns
    /// its merged profile.
    pub async fn wait_samples(&mut self, pid: u32, samples: u64) -> Profile {
        let store = self.handle.store.clone();
        let task = self.task.as_ref().expect("running");
        let result =
            ferrotel_e2e::wait_for(&format!("{samples} samples of pid {pid}"), WAIT, || {
                let got = store.query_merged(&Selector::Pid(pid), 0);
                let finished = task.is_finished();
                async move {
                    if finished {
                        return Err(format!("{}the profiler stopped", ferrotel_e2e::FATAL));
                    }
                    match got {
                        Some(p) if p.total() >= samples => Ok(p),
                        Some(p) => Err(format!("{} samples so far", p.total())),
                        None => Err("no profile yet".into()),
                    }
                }
            })
            .await;
        match result {
            Ok(p) => p,
            Err(e) => {
                if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                    let outcome = self.task.take().expect("task").await;
                    panic!("{e}; the profiler ended with {outcome:?}");
                }
                panic!("{e}");
            }
        }
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("profiler task")
                .expect("profiler stops cleanly");
        }
    }
}

/// Share of samples whose stack contains a frame matching `pred`.
pub fn share(
    profile: &Profile,
    pred: impl Fn(&ferrotel_probe::profile::model::Frame) -> bool,
) -> f64 {
    let frames = profile.frames();
    let hit: u64 = profile
        .samples()
        .filter(|(stack, _, _)| stack.iter().any(|&i| pred(&frames[i as usize])))
        .map(|(_, _, n)| n)
        .sum();
    hit as f64 / profile.total().max(1) as f64
}

/// Samples per line of the Python function `name` (its innermost frame).
pub fn python_lines(
    profile: &Profile,
    name: &str,
) -> std::collections::BTreeMap<(String, u32), u64> {
    let frames = profile.frames();
    let mut out = std::collections::BTreeMap::new();
    for (stack, _, n) in profile.samples() {
        if let Some(f) = stack
            .iter()
            .rev()
            .map(|&i| &frames[i as usize])
            .find(|f| f.kind == FrameKind::Python && &*f.function == name)
        {
            *out.entry((f.file.as_deref().unwrap_or("").to_owned(), f.line))
                .or_default() += n;
        }
    }
    out
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The 1-based line of `marker` in `file`.
pub fn line_of(file: &Path, marker: &str) -> u32 {
    let text = std::fs::read_to_string(file).expect("read source");
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("{marker} not in {}", file.display()))
}
