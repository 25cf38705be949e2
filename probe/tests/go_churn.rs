//! Process churn, as root: short-lived Go servers started one after another
//! (several at a time) under the Go probe, each serving requests for a
//! moment and then killed or stopped. Every process the probe attached to
//! costs it uprobes (perf events), an entry in its per-process maps and
//! in-flight entries for the requests it served; after the churn all of it
//! must be back where it was before the first process started: the same
//! perf event and BPF link descriptors, no entry left in a per-process map,
//! no in-flight entry of a dead process. The probe stays up throughout and
//! every span it exported belongs to a process of the churn.
//!
//! `FERROTEL_CHURN_PROCESSES` sets how many processes (default 80); the
//! scenario with 1,000 over ten minutes is the same test with
//! `FERROTEL_CHURN_PROCESSES=1000 FERROTEL_CHURN_LIFETIME_MS=2400`.

mod go_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use go_common::{GoApp, Probe, TOOLCHAINS, WAIT, apps, collector};

/// How many processes churn through, and how long each lives.
fn churn_settings() -> (usize, Duration) {
    let read = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|e| panic!("{name}={v:?} is not a count: {e}"))
            })
            .unwrap_or(default)
    };
    (
        read("FERROTEL_CHURN_PROCESSES", 80) as usize,
        Duration::from_millis(read("FERROTEL_CHURN_LIFETIME_MS", 1500)),
    )
}

/// Processes alive at once.
const CONCURRENT: usize = 4;

/// What the probe holds in the kernel, seen from this process (the probe
/// runs in it): descriptors by kind and the entries of each BPF map it
/// holds open, by map name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KernelHoldings {
    perf_events: usize,
    bpf_links: usize,
    map_entries: BTreeMap<String, usize>,
}

/// Perf event and BPF link descriptors, and the ids of the BPF maps held.
fn descriptors() -> (usize, usize, BTreeSet<u32>) {
    let mut perf_events = 0;
    let mut bpf_links = 0;
    let mut map_ids = BTreeSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let Ok(fd) = fd else { continue };
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        match target.to_string_lossy().as_ref() {
            "anon_inode:[perf_event]" => perf_events += 1,
            "anon_inode:bpf_link" => bpf_links += 1,
            "anon_inode:bpf-map" => {
                let info = Path::new("/proc/self/fdinfo").join(fd.file_name());
                let info = std::fs::read_to_string(info).unwrap_or_default();
                if let Some(id) = info
                    .lines()
                    .find_map(|l| l.strip_prefix("map_id:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                {
                    map_ids.insert(id);
                }
            }
            _ => {}
        }
    }
    (perf_events, bpf_links, map_ids)
}

fn holdings() -> KernelHoldings {
    let (perf_events, bpf_links, map_ids) = descriptors();
    let mut map_entries = BTreeMap::new();
    for id in map_ids {
        let Some((name, kind)) = map_name_and_type(id) else {
            continue;
        };
        // Hash maps hold what came and went; arrays, rings and programs'
        // own data always have their fixed size.
        if !kind.contains("hash") {
            continue;
        }
        *map_entries.entry(name).or_default() += map_len(id);
    }
    KernelHoldings {
        perf_events,
        bpf_links,
        map_entries,
    }
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = Command::new("bpftool")
        .args(["-j"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run bpftool (make tools installs it): {e}"));
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool {args:?} printed no JSON: {e}"))
}

fn map_name_and_type(id: u32) -> Option<(String, String)> {
    let id = id.to_string();
    let info = bpftool(&["map", "show", "id", &id]);
    Some((
        info.get("name")?.as_str()?.to_owned(),
        info.get("type")?.as_str()?.to_owned(),
    ))
}

fn map_len(id: u32) -> usize {
    let id = id.to_string();
    bpftool(&["map", "dump", "id", &id])
        .as_array()
        .map_or(0, Vec::len)
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// One short-lived server: started, asked `GET /users/<n>` in a loop for
/// `lifetime`, then stopped. Returns its pid.
async fn one_life(bin: &Path, lifetime: Duration, index: usize) -> u32 {
    let bin = bin.to_owned();
    let app = tokio::task::spawn_blocking(move || GoApp::start(&bin, &["-addr", "127.0.0.1:0"]))
        .await
        .expect("start a Go server");
    let pid = app.pid();
    let client = go_common::http_client();
    let deadline = tokio::time::Instant::now() + lifetime;
    let mut n = 0;
    while tokio::time::Instant::now() < deadline {
        n += 1;
        // A request cut by the end of the process is fine: loss is not
        // what this test measures.
        let _ = client
            .get(app.url(&format!("/users/{n}")))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !index.is_multiple_of(2) {
        // Half stop on SIGTERM (given a moment to exit on their own), half
        // are killed outright with requests possibly in flight.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(app);
    pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_processes_leave_no_uprobe_map_entry_or_descriptor_behind() {
    let (processes, lifetime) = churn_settings();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let apps = apps(TOOLCHAINS[0]);
    // A copy of its own, so that the probe's glob matches the churn only.
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("churnserver");
    std::fs::copy(apps.bin("httpserver"), &bin).expect("copy the Go test server");
    let glob = format!("{}/churnserver", dir.path().display());

    let collector = collector().await;
    let mut probe = Probe::start(&collector, &[], &[&glob], 0).await;
    // One process first, so the binary's analysis is cached and the maps
    // exist before the baseline is taken.
    let warmup = one_life(&bin, lifetime, 1).await;
    probe.wait_attached(0).await;
    // Its uprobes are closed in the background: the baseline is what the
    // probe holds once that has settled (the same for three looks in a row).
    let mut looks = vec![holdings()];
    while looks.len() < 3 || looks.iter().any(|l| *l != looks[0]) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        looks.push(holdings());
        if looks.len() > 3 {
            looks.remove(0);
        }
    }
    let baseline = looks.remove(0);
    let rss_before = rss_kib();
    eprintln!("baseline after one process: {baseline:?}, RSS {rss_before} KiB");

    let started = std::time::Instant::now();
    let mut pids = BTreeSet::from([warmup]);
    let mut running = tokio::task::JoinSet::new();
    let mut peak = baseline.clone();
    for index in 0..processes {
        if running.len() == CONCURRENT {
            pids.insert(
                running
                    .join_next()
                    .await
                    .expect("a running life")
                    .expect("life"),
            );
            let (perf_events, bpf_links, _) = descriptors();
            peak.perf_events = peak.perf_events.max(perf_events);
            peak.bpf_links = peak.bpf_links.max(bpf_links);
        }
        let bin = bin.clone();
        running.spawn(async move { one_life(&bin, lifetime, index).await });
    }
    while let Some(done) = running.join_next().await {
        pids.insert(done.expect("life"));
    }
    let churn = started.elapsed();
    probe.wait_attached(0).await;
    probe.assert_running();

    // The probe forgets a process at its next scan after the exit; the
    // kernel side is cleaned up with it.
    let after = ferrotel_e2e::wait_for("the probe's holdings back to the baseline", WAIT, || {
        let baseline = baseline.clone();
        async move {
            let now = holdings();
            if now == baseline {
                Ok(now)
            } else {
                Err(format!("baseline {baseline:?}, now {now:?}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("after {processes} processes: {e}"));
    let rss_after = rss_kib();

    let spans = collector
        .wait_for_spans(1, WAIT, |_| true)
        .await
        .expect("the churned servers' spans reach the collector");
    let traced: BTreeSet<String> = spans
        .iter()
        .filter_map(|s| s.resource_str("process.pid").map(str::to_owned))
        .collect();
    let known: BTreeSet<String> = pids.iter().map(u32::to_string).collect();
    let strangers: Vec<&String> = traced.difference(&known).collect();
    assert!(
        strangers.is_empty(),
        "spans from processes outside the churn: {strangers:?}"
    );
    eprintln!(
        "{} processes in {:.1} s ({} with spans), peak {} perf events / {} links, \
         back to {:?}; test process RSS {} -> {} KiB",
        pids.len(),
        churn.as_secs_f64(),
        traced.len(),
        peak.perf_events,
        peak.bpf_links,
        after,
        rss_before,
        rss_after
    );
    let metrics = probe.metrics().await;
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.contains("attach") || l.contains("analysis") || l.contains("refused"))
    }) {
        eprintln!("probe: {line}");
    }
    assert!(
        peak.perf_events > baseline.perf_events || peak.bpf_links > baseline.bpf_links,
        "the probe never attached to a churned process (peak {peak:?})"
    );
    probe.stop().await;
}
