//! Go CPU profiles: a program that spends 75 % of its CPU in `main.hot`
//! shows it at that share, with the inlined `main.mix` expanded from the
//! binary's inline tree and the right lines, built with the machine's Go
//! and Debian's 1.23, with symbols and stripped (`-s -w`: pclntab only).

mod go_common;
mod profile_common;

use ferrotel_probe::profile::model::FrameKind;
use profile_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_go_function_gets_its_cpu_share_with_inlined_frames_stripped_or_not() {
    let source = repo_path("e2e/apps/go/cpuburn/main.go");
    let hot_line = line_of(&source, "// HOT");
    let mix_line = line_of(&source, "// MIX");
    let mut targets = Vec::new();
    for toolchain in go_common::TOOLCHAINS {
        let apps = go_common::apps(toolchain);
        for bin in ["cpuburn", "cpuburn.stripped"] {
            let path = apps.bin(bin);
            let label = format!("{} {bin}", apps.go_version);
            targets.push((
                label,
                Target::start(&[path.to_str().unwrap(), "-spin"], "LISTENING"),
            ));
        }
    }
    let mut profiler = Running::start(99);
    for (_, t) in &targets {
        profiler.profile(t.pid());
    }
    let mut failures = Vec::new();
    for (label, t) in &targets {
        let profile = profiler.wait_samples(t.pid(), 300).await;
        let frames = profile.frames();
        let hot = share(&profile, |f| &*f.function == "main.hot");
        let cold = share(&profile, |f| &*f.function == "main.cold");
        // Samples in hot's loop: the inlined mix must sit right above hot
        // (root first), on its own line, with hot on the call's line.
        let (mut in_mix, mut in_hot, mut hot_on_line, mut mix_on_line) = (0u64, 0u64, 0u64, 0u64);
        for (stack, _, n) in profile.samples() {
            let Some(pos) = stack
                .iter()
                .position(|&i| &*frames[i as usize].function == "main.hot")
            else {
                continue;
            };
            in_hot += n;
            if frames[stack[pos] as usize].line == hot_line {
                hot_on_line += n;
            }
            if let Some(&above) = stack.get(pos + 1) {
                let f = &frames[above as usize];
                if &*f.function == "main.mix" && f.kind == FrameKind::GoInlined {
                    in_mix += n;
                    if f.line == mix_line {
                        mix_on_line += n;
                    }
                }
            }
        }
        eprintln!(
            "{label}: {} samples, hot {:.1} %, cold {:.1} %, in hot {in_hot} (on line {hot_on_line}), inlined mix {in_mix} (on line {mix_on_line})",
            profile.total(),
            hot * 100.0,
            cold * 100.0,
        );
        if !(0.65..=0.85).contains(&hot) {
            failures.push(format!(
                "{label}: main.hot at {:.1} % (expected 75 % ± 10)",
                hot * 100.0
            ));
        }
        if !(0.15..=0.35).contains(&cold) {
            failures.push(format!(
                "{label}: main.cold at {:.1} % (expected 25 % ± 10)",
                cold * 100.0
            ));
        }
        // mix is the loop's body: most of hot's samples are in it.
        if in_mix * 2 < in_hot || mix_on_line * 10 < in_mix * 9 {
            failures.push(format!(
                "{label}: inlined main.mix in {in_mix} of {in_hot} samples of main.hot, {mix_on_line} on main.go:{mix_line}"
            ));
        }
        if hot_on_line * 2 < in_hot {
            failures.push(format!(
                "{label}: main.hot on main.go:{hot_line} in {hot_on_line} of {in_hot} samples"
            ));
        }
    }
    profiler.stop().await;
    assert!(failures.is_empty(), "{failures:#?}");
}
