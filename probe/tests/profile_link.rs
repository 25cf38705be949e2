//! Trace ↔ profile links end to end: the probe traces a Go server and
//! profiles it; samples taken while a request is served carry that request's
//! server span, and reach the real collector (profiles pipeline behind its
//! `service.profilesSupport` gate) as OTLP profiles whose links name spans
//! the collector received.

mod go_common;
mod profile_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferrotel_e2e::Collector;
use ferrotel_e2e::collector::read_profile_samples;
use ferrotel_probe::profile::pprof;
use go_common::Probe;

/// Linked sample counts in the collector's profiles file: (span id hex,
/// function names of the sample, count).
fn linked_samples(path: &std::path::Path) -> Vec<(String, Vec<String>, u64)> {
    read_profile_samples(path)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| Some((s.span_id?, s.functions, s.count)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_taken_during_a_request_link_to_its_span_in_otlp_profiles_at_the_collector() {
    profile_common::require_root();
    let collector = Collector::start_with_profiles()
        .await
        .expect("start the collector with a profiles pipeline (make tools builds it)");
    let apps = go_common::apps(go_common::TOOLCHAINS[0]);
    let app = go_common::GoApp::start(&apps.bin("cpuburn"), &[]);

    let probe = Probe::start_with(&collector, &[app.pid()], &[], 1, |file| {
        file.profiling.enabled = true;
        file.profiling.frequency_hz = 99;
        file.profiling.export_interval_seconds = 1;
    })
    .await;

    // Load: sequential requests until the assertions hold (bounded).
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop_load.clone();
        let url = app.url("/burn");
        tokio::spawn(async move {
            let client = go_common::http_client();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = client
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status());
            }
        })
    };

    let profiles = collector.profiles_file().expect("profiles file").to_owned();
    let result = ferrotel_e2e::wait_for(
        "linked samples of /burn spans in the collector's profiles",
        Duration::from_secs(120),
        || {
            let spans: HashSet<String> = collector
                .spans()
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.kind == 2 && s.name.contains("/burn"))
                .map(|s| s.span_id)
                .collect();
            let linked = linked_samples(&profiles);
            probe.assert_running();
            async move {
                let total: u64 = linked.iter().map(|(_, _, n)| n).sum();
                let known: u64 = linked
                    .iter()
                    .filter(|(s, _, _)| spans.contains(s))
                    .map(|(_, _, n)| n)
                    .sum();
                let hot: u64 = linked
                    .iter()
                    .filter(|(_, names, _)| names.iter().any(|n| n == "main.hot"))
                    .map(|(_, _, n)| n)
                    .sum();
                if total >= 100 {
                    Ok((total, known, hot, spans.len()))
                } else {
                    Err(format!(
                        "{total} linked samples so far ({known} to one of {} server spans)",
                        spans.len()
                    ))
                }
            }
        },
    )
    .await;
    stop_load.store(true, Ordering::Relaxed);
    let _ = load.await;
    let (total, known, hot, spans) = result.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{total} linked samples, {known} to known server spans ({spans}), {hot} in main.hot");

    // The probe serves the same profile as pprof.
    let pprof_bytes = go_common::http_client()
        .get(format!(
            "{}?pid={}&seconds=600",
            probe.metrics_url.replace("/metrics", "/debug/profile"),
            app.pid()
        ))
        .send()
        .await
        .expect("GET /debug/profile")
        .bytes()
        .await
        .expect("pprof body");
    let served = pprof::decode(&pprof_bytes, Default::default()).expect("/debug/profile is pprof");
    let served_linked: u64 = served
        .samples()
        .filter(|(_, l, _)| l.is_some())
        .map(|(_, _, n)| n)
        .sum();

    probe.stop().await;

    // Spans are exported within 200 ms and profiles a window later, so a
    // linked span is almost always already at the collector; allow the
    // last window's stragglers.
    assert!(
        known * 10 >= total * 9,
        "{known} of {total} linked samples name a server span the collector received"
    );
    // Each request is hot (3 units) + cold (1 unit) + HTTP work.
    assert!(
        hot * 100 >= total * 60,
        "only {hot} of {total} linked samples are in main.hot (expected about 75 %)"
    );
    assert!(served_linked > 0, "/debug/profile carries the span links");
}
