//! The measurement behind walking CPython frames in the kernel
//! (`profile.bpf.c`) rather than from user space (docs/probe-profiling.md).
//!
//! Runs e2e/apps/python/cpu_burn.py and samples it at 99 Hz. For every
//! sample the kernel walked the frame chain at the tick; user space then
//! walks the same thread's chain from `/proc/<pid>/mem` as soon as it reads
//! the sample, the way a user-space walker would. Reports how often the two
//! agree, what each costs, and the kernel program's cost per tick with and
//! without the walk (BPF_ENABLE_STATS, held only while measuring).
//!
//!   sudo cargo run --release -p ferrotel-probe --example python_walk -- [PYTHON] [SECONDS]

#![allow(clippy::print_stdout)] // a measurement: what it prints is the result

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrotel_api::probe_config::ProfilingConfig;
use ferrotel_probe::driver::{Driver, ProgramSet};
use ferrotel_probe::health::Health;
use ferrotel_probe::profile::Profiler;
use ferrotel_probe::profile::maps::Memory;
use ferrotel_probe::profile::set::{BpfOptions, ProfileSet};
use ferrotel_probe::profile::symbolize::{Limits, Symbolizer};
use ferrotel_probe::targets::ProcessTarget;
use ferrotel_probe::telemetry::clock::ClockOffsets;
use ferrotel_probe::telemetry::resource::ResourceRegistry;
use ferrotel_probe_ebpf::Wire;
use ferrotel_probe_ebpf::contract::profile::TICK;
use ferrotel_probe_ebpf::profile::{ProfileSample, SAMPLE_KIND};
use ferrotel_probe_ebpf::wire::EventHeader;

#[derive(Default, Debug)]
struct Tally {
    samples: u64,
    with_frames: u64,
    leaf_agrees: u64,
    stack_agrees: u64,
    user_walk: Duration,
    user_delay_ns: u128,
    user_frames: u64,
}

fn program_cost(driver: &mut Driver<ProfileSet>) -> (Duration, u64) {
    let info = driver
        .kernel_mut()
        .ebpf_mut()
        .program(TICK)
        .expect("ft_profile_tick")
        .info()
        .expect("program info");
    (info.run_time(), info.run_count())
}

/// Phase result: what the samples showed, the program's run time and run
/// count over the phase.
async fn sample(pid: u32, seconds: u64, in_kernel: bool, claim: bool) -> (Tally, Duration, u64) {
    let config = ProfilingConfig {
        enabled: true,
        frequency_hz: 99,
        export_interval_seconds: 3600,
        kernel_stacks: false,
    };
    let (profiler, _) = Profiler::new(
        config,
        None,
        ResourceRegistry::new(Default::default()),
        ClockOffsets::measure(),
        Health::new(),
    );
    let set = profiler
        .with_bpf_options(BpfOptions {
            frequency_hz: 99,
            kernel_stacks: false,
            python_frames_in_kernel: in_kernel,
            ring_buffer_bytes: 4 << 20,
        })
        .into_set();
    let mut driver = Driver::load(set).expect("load the profiling programs (run as root)");
    // The set has a symbolizer of its own; this one is for the user-space walk.
    let mut symbolizer = Symbolizer::new(Limits::default());
    let (_, kind) = symbolizer.add_process(pid).expect("examine the target");
    println!("target {pid}: {kind:?}");
    if claim {
        let (set, kernel) = driver.set_and_kernel_mut();
        let target = ProcessTarget {
            pid,
            exe: format!("/proc/{pid}/exe").into(),
            reason: "pid",
        };
        if let Err(refusal) = set.add_target(kernel, &target).await {
            panic!("profile the target: {:#}", refusal.error);
        }
    }
    let py = symbolizer.python(pid).expect("a CPython process").clone();
    let mem = Memory::open(pid).expect("/proc/<pid>/mem");
    let mut tally = Tally::default();
    let start_cost = program_cost(&mut driver);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        // Polled like the set's own reader (every 100 ms, no sample
        // reaching the wake-up threshold first at one CPU's 99 Hz).
        tokio::time::sleep(Duration::from_millis(100)).await;
        driver.drain_raw(|bytes| {
            let Some(h) = EventHeader::read(bytes) else {
                return;
            };
            if h.kind != SAMPLE_KIND {
                return;
            }
            let Some(s) = ProfileSample::read(bytes) else {
                return;
            };
            tally.samples += 1;
            tally.user_frames += u64::from(s.user_len);
            if s.py_tstate == 0 {
                return;
            }
            let t = Instant::now();
            let user = py.walk_user(&mem, s.py_tstate, 64);
            tally.user_walk += t.elapsed();
            tally.user_delay_ns +=
                u128::from(ClockOffsets::monotonic_now_ns().saturating_sub(s.header.ts_ns));
            if !in_kernel {
                return;
            }
            let kernel: Vec<(u64, u64)> =
                s.python_stack().iter().map(|f| (f.code, f.instr)).collect();
            if kernel.is_empty() {
                return;
            }
            tally.with_frames += 1;
            if kernel.first().map(|f| f.0) == user.first().map(|f| f.0) {
                tally.leaf_agrees += 1;
            }
            if kernel == user {
                tally.stack_agrees += 1;
            }
        });
    }
    let end_cost = program_cost(&mut driver);
    (
        tally,
        end_cost.0.saturating_sub(start_cost.0),
        end_cost.1.saturating_sub(start_cost.1),
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let python = args.next().unwrap_or_else(|| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.pyenv/versions/3.11.7/bin/python3")
    });
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../e2e/apps/python/cpu_burn.py"
    );
    let mut child = Command::new(&python)
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start cpu_burn.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("READY");
    let pid = child.id();
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let (k, k_time, k_runs) = sample(pid, seconds, true, true).await;
    let (u, u_time, u_runs) = sample(pid, seconds, false, true).await;
    let (_, f_time, f_runs) = sample(pid, seconds, false, false).await;
    let _ = child.kill();
    let _ = child.wait();
    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "{python}, {seconds} s per mode, 99 Hz, load {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "kernel walk: {} samples, {} with frames; user-space walk of the same thread on receipt agrees on the innermost frame in {:.1} %, on the whole stack in {:.1} % (read {:.1} ms after the tick on average)",
        k.samples,
        k.with_frames,
        pct(k.leaf_agrees, k.with_frames),
        pct(k.stack_agrees, k.with_frames),
        k.user_delay_ns as f64 / k.samples.max(1) as f64 / 1e6
    );
    // Ticks of other processes (and idle) cost the filter only.
    let filter = f_time.as_nanos() as f64 / f_runs.max(1) as f64;
    let per_sample = |time: Duration, runs: u64, samples: u64| {
        (time.as_nanos() as f64 - (runs.saturating_sub(samples)) as f64 * filter)
            / samples.max(1) as f64
    };
    println!(
        "kernel program: {filter:.0} ns per tick of an untraced process; per sample {:.0} ns with the walk, {:.0} ns without (user stacks of {:.1} frames on average)",
        per_sample(k_time, k_runs, k.samples),
        per_sample(u_time, u_runs, u.samples),
        k.user_frames as f64 / k.samples.max(1) as f64,
    );
    println!(
        "user-space walk: {:.1} µs per sample ({} samples)",
        u.user_walk.as_nanos() as f64 / u.samples.max(1) as f64 / 1e3,
        u.samples
    );
}
