//! Python-level CPU profiles: for every CPython here (pyenv 3.10–3.13,
//! shared libpython, and Debian's static /usr/bin/python3.11), a script that
//! spends 75 % of its CPU in `hot` shows `hot` at that share, on the right
//! file and line; a profiled shell that execs Python gets Python frames.
//! Real eBPF, real interpreters.

mod profile_common;

use ferrotel_probe::profile::model::FrameKind;
use ferrotel_probe::profile::store::Selector;
use profile_common::*;

/// (label, interpreter).
fn interpreters() -> Vec<(String, String)> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mut out = Vec::new();
    for minor in ["3.10", "3.11", "3.12", "3.13"] {
        let dir = std::fs::read_dir(format!("{home}/.pyenv/versions"))
            .expect("pyenv versions (~/.pyenv/versions) must exist on this machine");
        let mut versions: Vec<String> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|v| v.starts_with(&format!("{minor}.")))
            .collect();
        versions.sort();
        let v = versions
            .pop()
            .unwrap_or_else(|| panic!("no pyenv CPython {minor} under {home}/.pyenv/versions"));
        out.push((
            format!("pyenv {v}"),
            format!("{home}/.pyenv/versions/{v}/bin/python3"),
        ));
    }
    out.push(("Debian static 3.11".into(), "/usr/bin/python3.11".into()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_python_function_gets_its_cpu_share_on_the_right_line_in_every_cpython() {
    let script = repo_path("e2e/apps/python/cpu_burn.py");
    let script = std::fs::canonicalize(&script).expect("cpu_burn.py");
    let hot_line = line_of(&script, "# HOT");
    let mut profiler = Running::start(99);
    let targets: Vec<(String, Target)> = interpreters()
        .into_iter()
        .map(|(label, python)| {
            let t = Target::start(&[&python, script.to_str().unwrap()], "READY");
            (label, t)
        })
        .collect();
    // A busy process nobody asked to profile: the kernel program must
    // drop its ticks at the claim check.
    let python = &interpreters()[1].1;
    let untraced = Target::start(&[python, script.to_str().unwrap()], "READY");
    for (_, t) in &targets {
        profiler.profile(t.pid());
    }
    let mut failures = Vec::new();
    for (label, t) in &targets {
        let profile = profiler.wait_samples(t.pid(), 300).await;
        let hot = share(&profile, |f| &*f.function == "hot");
        let cold = share(&profile, |f| &*f.function == "cold");
        let lines = python_lines(&profile, "hot");
        let top = lines
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, _)| k.clone());
        eprintln!(
            "{label}: {} samples, hot {:.1} %, cold {:.1} %, hot lines {lines:?}",
            profile.total(),
            hot * 100.0,
            cold * 100.0
        );
        // 75 % expected (3:1 iterations of one loop body). With 300+
        // samples one standard deviation of the sampling error is 2.5
        // points: ±10 points is 4 sigma.
        if !(0.65..=0.85).contains(&hot) {
            failures.push(format!(
                "{label}: hot at {:.1} % (expected 75 % ± 10)",
                hot * 100.0
            ));
        }
        if !(0.15..=0.35).contains(&cold) {
            failures.push(format!(
                "{label}: cold at {:.1} % (expected 25 % ± 10)",
                cold * 100.0
            ));
        }
        match top {
            Some((file, line)) if file == script.to_str().unwrap() && line == hot_line => {}
            other => failures.push(format!(
                "{label}: hot's most sampled line is {other:?}, expected {}:{hot_line}",
                script.display()
            )),
        }
    }
    let leaked = profiler.handle.store.query(
        &ferrotel_probe::profile::store::Selector::Pid(untraced.pid()),
        0,
    );
    profiler.stop().await;
    assert!(
        leaked.is_empty(),
        "an untraced process was sampled: {} samples",
        leaked.iter().map(|p| p.total()).sum::<u64>()
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A claimed process that execs Python (a shell wrapper's `exec python
/// app.py`, common in container entrypoints) gets Python frames from then
/// on: the exec is seen in the kernel and the process is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiled_process_that_execs_python_gets_python_frames() {
    let script =
        std::fs::canonicalize(repo_path("e2e/apps/python/cpu_burn.py")).expect("cpu_burn.py");
    let python = &interpreters()[1].1;
    let dir = tempfile::tempdir().expect("temp dir");
    let go = dir.path().join("go");
    let mut profiler = Running::start(99);
    // Busy in the shell (so it is sampled as a native process) until told
    // to exec the interpreter.
    let wrapper = Target::start(
        &[
            "/bin/sh",
            "-c",
            // The harness stops reading stdout after WAITING.
            r#"echo WAITING; while [ ! -e "$1" ]; do :; done; exec "$2" "$3" >/dev/null"#,
            "sh",
            go.to_str().unwrap(),
            python,
            script.to_str().unwrap(),
        ],
        "WAITING",
    );
    let pid = wrapper.pid();
    profiler.profile(pid);
    let before = profiler.wait_samples(pid, 20).await;
    assert_eq!(
        share(&before, |f| f.kind == FrameKind::Python),
        0.0,
        "the shell has no Python frames"
    );
    std::fs::write(&go, b"").expect("tell the wrapper to exec");
    let store = profiler.handle.store.clone();
    let after = ferrotel_e2e::wait_for("Python samples after the exec", WAIT, || {
        let profile = store.query_merged(&Selector::Pid(pid), 0);
        async move {
            let profile = profile.ok_or_else(|| "no profile yet".to_string())?;
            let hot = share(&profile, |f| {
                f.kind == FrameKind::Python && &*f.function == "hot"
            });
            let samples = (hot * profile.total() as f64) as u64;
            if samples >= 50 {
                Ok(profile)
            } else {
                Err(format!("{samples} samples in Python's hot so far"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let lines = python_lines(&after, "hot");
    profiler.stop().await;
    let hot_line = line_of(&script, "# HOT");
    assert!(
        lines.contains_key(&(script.to_str().unwrap().to_owned(), hot_line)),
        "hot's samples name its file and line after the exec: {lines:?}"
    );
}
