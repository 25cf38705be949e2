//! The profiler reads a new process's files off the event loop: the ring is
//! drained while that reading runs, and the process is reported once it is
//! back. Needs root (eBPF programs, perf events).

mod profile_common;

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use ferrotel_api::probe_config::ProfilingConfig;
use ferrotel_api::probe_endpoints::TracingOutcome;
use ferrotel_probe::analysis::{Analysed, Analyzer, DEFAULT_MAX_PENDING};
use ferrotel_probe::driver::{Adding, DecodeError, Driver, ProgramSet, Refusal, claim};
use ferrotel_probe::ebpf::{EbpfError, Kernel, Tuning};
use ferrotel_probe::health::Health;
use ferrotel_probe::ledger::ProcessLedger;
use ferrotel_probe::profile::Profiler;
use ferrotel_probe::targets::{ProcessTarget, TargetEvent, target_channel};
use ferrotel_probe::telemetry::clock::ClockOffsets;
use ferrotel_probe::telemetry::resource::ResourceRegistry;
use ferrotel_probe_ebpf::Wire;
use ferrotel_probe_ebpf::contract;
use ferrotel_probe_ebpf::profile::SAMPLE_KIND;
use ferrotel_probe_ebpf::wire::EventHeader;
use profile_common::{Target, WAIT, require_root};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

const SET: &str = "held_back";

fn target(pid: u32) -> ProcessTarget {
    ProcessTarget {
        pid,
        exe: PathBuf::from(format!("/proc/{pid}/exe")),
        reason: "pid",
    }
}

/// The profiler's kernel side under a set shaped like the profiler's: the
/// reading of `held` waits for `release` (as a large binary keeps its
/// reading busy), every other target is claimed at once; the pid of every
/// sample decoded is an output.
struct HeldBack {
    held: u32,
    release: Option<std_mpsc::Receiver<()>>,
    analyses: Analyzer<u32, (), String>,
    added: Vec<(u32, Result<(), Refusal>)>,
}

impl ProgramSet for HeldBack {
    type Output = u32;

    fn name(&self) -> &'static str {
        SET
    }

    fn object(&self) -> &'static [u8] {
        ferrotel_probe_ebpf::PROFILE
    }

    fn tuning(&self) -> Tuning {
        Tuning {
            ring_buffer_bytes: contract::defaults::PROFILE_RING_BUFFER_BYTES,
            wakeup_bytes: contract::defaults::WAKEUP_BYTES,
            poll: Duration::from_millis(100),
            globals: Vec::new(),
            map_sizes: Vec::new(),
            map_pins: Vec::new(),
        }
    }

    fn attach(&mut self, kernel: &mut Kernel) -> Result<(), EbpfError> {
        kernel.attach_process_tracking()?;
        kernel.attach_cpu_clock(contract::profile::TICK, 99)?;
        Ok(())
    }

    async fn add_target(
        &mut self,
        kernel: &mut Kernel,
        target: &ProcessTarget,
    ) -> Result<Adding, Refusal> {
        if target.pid != self.held {
            claim(kernel, target.pid, true)?;
            return Ok(Adding::Traced);
        }
        let release = self.release.take().expect("the held target is added once");
        self.analyses
            .submit(target.pid, move || {
                release
                    .recv()
                    .map_err(|_| "the test ended before releasing the reading".to_owned())
            })
            .map_err(|busy| Refusal::new("analysis_busy", busy))?;
        Ok(Adding::Pending)
    }

    fn settle(&mut self, kernel: &mut Kernel) {
        while let Some(Analysed { key, outcome }) = self.analyses.try_next() {
            let claimed = match outcome {
                Ok(()) => claim(kernel, key, true),
                Err(failure) => Err(Refusal::new("examine_failed", anyhow::anyhow!("{failure}"))),
            };
            self.added.push((key, claimed));
        }
    }

    fn background(&self) -> Option<std::sync::Arc<Notify>> {
        Some(self.analyses.wakeup())
    }

    fn background_pending(&self) -> usize {
        self.analyses.pending()
    }

    fn take_added(&mut self) -> Vec<(u32, Result<(), Refusal>)> {
        std::mem::take(&mut self.added)
    }

    fn remove_target(&mut self, kernel: &mut Kernel, pid: u32) {
        self.analyses.cancel(&pid);
        if let Ok(claims) = kernel.claims() {
            claims.release(pid);
        }
    }

    fn decode(&mut self, record: &[u8], out: &mut Vec<u32>) -> Result<(), DecodeError> {
        let header = EventHeader::read(record)
            .ok_or_else(|| DecodeError::new(format!("{}-byte record", record.len())))?;
        if header.kind == SAMPLE_KIND {
            out.push(header.tgid);
        }
        Ok(())
    }
}

fn tracing_of(ledger: &ProcessLedger, pid: u32) -> Option<TracingOutcome> {
    ledger
        .report(None, "test")
        .processes
        .into_iter()
        .find(|p| p.pid == pid)
        .and_then(|p| p.tracing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_is_drained_while_a_process_is_read_and_the_process_is_reported_after() {
    require_root();
    let held = Target::start(&["sh", "-c", "echo ready; exec sleep 600"], "ready");
    let busy = Target::start(&["sh", "-c", "echo ready; while :; do :; done"], "ready");
    let (release, release_rx) = std_mpsc::channel();
    let set = HeldBack {
        held: held.pid(),
        release: Some(release_rx),
        analyses: Analyzer::new(DEFAULT_MAX_PENDING),
        added: Vec::new(),
    };
    let driver = Driver::load(set).expect("load the profiler's object");
    let (publisher, targets) = target_channel();
    let ledger = targets.ledger().clone();
    let (sink, mut outputs) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let task = tokio::spawn(driver.run(targets, sink, None, stop.clone()));

    // The held process first: its reading blocks until released.
    publisher.publish(TargetEvent::Added(target(held.pid())));
    publisher.publish(TargetEvent::Added(target(busy.pid())));
    let sampled = tokio::time::timeout(WAIT, async {
        while let Some(pid) = outputs.recv().await {
            if pid == busy.pid() {
                return;
            }
        }
        panic!("the driver stopped");
    })
    .await;
    assert!(
        sampled.is_ok(),
        "no sample of the busy process was decoded while the other process was being read: \
         the driver waited for that reading instead of draining its ring"
    );
    assert_eq!(
        tracing_of(&ledger, held.pid()),
        None,
        "the held process is reported only once its reading is back"
    );
    assert!(
        matches!(
            tracing_of(&ledger, busy.pid()),
            Some(TracingOutcome::Traced { .. })
        ),
        "{:?}",
        tracing_of(&ledger, busy.pid())
    );

    release.send(()).expect("the reading waits");
    let reported = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(outcome) = tracing_of(&ledger, held.pid()) {
                return outcome;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the held process is reported once its reading is back");
    assert!(
        matches!(&reported, TracingOutcome::Traced { program_set } if program_set == SET),
        "{reported:?}"
    );

    stop.cancel();
    task.await.expect("driver task").expect("driver run");
}

/// The profiler's own set answers "pending" and reports the outcome
/// later, for a live process and for one that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profiler_reads_a_new_process_off_the_loop_and_reports_it_after() {
    require_root();
    let live = Target::start(&["sh", "-c", "echo ready; exec sleep 600"], "ready");
    let gone = {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("start true");
        let pid = child.id();
        child.wait().expect("reap true");
        pid
    };
    let config = ProfilingConfig {
        enabled: true,
        frequency_hz: 19,
        export_interval_seconds: 1,
        kernel_stacks: false,
    };
    let (profiler, _handle) = Profiler::new(
        config,
        None,
        ResourceRegistry::new(Default::default()),
        ClockOffsets::measure(),
        Health::new(),
    );
    let mut driver = Driver::load(profiler.into_set()).expect("load the profiler");
    for pid in [live.pid(), gone] {
        let (set, kernel) = driver.set_and_kernel_mut();
        let adding = set
            .add_target(kernel, &target(pid))
            .await
            .unwrap_or_else(|refusal| panic!("pid {pid}: {}", refusal.error));
        assert_eq!(adding, Adding::Pending, "pid {pid}");
    }
    assert_eq!(driver.set().background_pending(), 2);
    driver.settle_background().await;
    let (set, kernel) = driver.set_and_kernel_mut();
    let mut outcomes = set.take_added();
    outcomes.sort_by_key(|(pid, _)| *pid == gone);
    let [(first, live_outcome), (second, gone_outcome)] = &outcomes[..] else {
        panic!("one outcome per target: {outcomes:?}");
    };
    assert_eq!((*first, *second), (live.pid(), gone));
    assert!(live_outcome.is_ok(), "{live_outcome:?}");
    assert_eq!(
        gone_outcome.as_ref().map_err(|r| r.reason).err(),
        Some("process_gone")
    );
    assert_eq!(set.attached(kernel, &Default::default()), 1);
    set.remove_target(kernel, live.pid());
    assert_eq!(set.attached(kernel, &Default::default()), 0);
}
