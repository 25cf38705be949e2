//! Replays the fuzz targets' committed inputs on stable Rust: every seed
//! (`probe/fuzz/seeds/<target>/`) and every input that once crashed a
//! target (`probe/fuzz/regressions/<target>/`) runs through the same body
//! the fuzzer runs (`probe/fuzz/src/lib.rs`). A regression that comes back
//! fails here, in `cargo test`, without nightly or libFuzzer.
//!
//! The fuzz build holds only `ferrotel-parse`; the requests the tracker and
//! Go decoder complete on these inputs are also mapped here to spans and
//! metric attributes (`telemetry::semconv`, `telemetry::route`), the next
//! code their workload-chosen text reaches.

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::path::{Path, PathBuf};

use ferrotel_api::probe_config::RoutesConfig;
use ferrotel_probe::telemetry::clock::ClockOffsets;
use ferrotel_probe::telemetry::record::{Protocol, RequestRecord, SpanKind};
use ferrotel_probe::telemetry::route::RouteTemplater;
use ferrotel_probe::telemetry::semconv;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    files
}

#[test]
fn every_target_has_committed_seeds() {
    for (target, _) in bodies::TARGETS {
        assert!(
            !inputs("seeds", target).is_empty(),
            "fuzz target {target} has no seeds in probe/fuzz/seeds/{target}/"
        );
    }
}

#[test]
fn seeds_and_past_crashes_run_clean_through_every_target() {
    let mut ran = 0;
    let mut mapped = 0;
    for (target, body) in bodies::TARGETS {
        for path in inputs("seeds", target)
            .into_iter()
            .chain(inputs("regressions", target))
        {
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                body(&data);
                mapped += match *target {
                    "socket_tracker" => map_to_telemetry(&bodies::socket_tracker_records(&data)),
                    "go_event" => map_to_telemetry(&Vec::from_iter(bodies::go_event_record(&data))),
                    _ => 0,
                };
            }));
            assert!(
                outcome.is_ok(),
                "fuzz target {target} panicked on {} (reproduce: make fuzz-one TARGET={target} INPUT={})",
                path.display(),
                path.display()
            );
            ran += 1;
        }
    }
    assert!(ran > 0, "no fuzz inputs found under probe/fuzz/");
    assert!(
        mapped > 0,
        "no socket_tracker or go_event input completed a request: the seeds no longer reach the span mapping"
    );
}

/// What the pipeline does with a completed request: route templating,
/// span and metric attributes. Returns how many records it mapped.
fn map_to_telemetry(records: &[RequestRecord]) -> usize {
    let clock = ClockOffsets::fixed(0, 0);
    let mut routes = RouteTemplater::new(&RoutesConfig::default());
    for record in records {
        let route = match &record.protocol {
            Protocol::Http(http) if record.kind == SpanKind::Server => {
                routes.route("svc", &http.path, http.route.as_deref()).route
            }
            _ => None,
        };
        let _ = semconv::to_span(record, route.as_deref(), &clock);
        let _ = semconv::metric_attributes(record, route.as_deref());
    }
    records.len()
}

#[test]
fn the_go_binary_seeds_reach_the_end_of_the_analysis() {
    use ferrotel_probe::go::binary::GoBinary;
    use ferrotel_probe::go::offsets::OffsetsTable;
    // Seeds that fail early would leave the fuzzer to discover the ELF,
    // build info, pclntab and DWARF formats by itself.
    for seed in ["symtab_dwarf", "stripped_pclntab"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds/go_binary")
            .join(seed);
        let data = std::fs::read(&path).expect("seed exists");
        let analysed = GoBinary::analyze_bytes(&path, &data, 0, 0, OffsetsTable::builtin())
            .unwrap_or_else(|e| panic!("seed {seed} must analyse: {e:?}"));
        assert_eq!(analysed.build.go_version, "go1.23.5", "{seed}");
        assert!(
            analysed.fields.contains_key("runtime.g.goid"),
            "{seed}: DWARF read: {:?}",
            analysed.fields
        );
        assert!(
            analysed
                .sites
                .contains_key("net/http.serverHandler.ServeHTTP"),
            "{seed}: functions and RETs found: {:?}",
            analysed.sites
        );
    }
}

#[test]
fn a_function_with_more_rets_than_the_uprobe_cap_is_not_probed() {
    use ferrotel_probe::go::binary::{GoBinary, MAX_RETURNS_PER_FUNCTION};
    use ferrotel_probe::go::offsets::{Feature, OffsetsTable};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/go_binary/many_rets");
    let data = std::fs::read(&path).expect("seed exists");
    let analysed = GoBinary::analyze_bytes(&path, &data, 0, 0, OffsetsTable::builtin())
        .expect("the binary analyses; only the function is refused");
    assert!(
        !analysed
            .sites
            .contains_key("net/http.serverHandler.ServeHTTP"),
        "no probe site for a function with 40 RETs (cap {MAX_RETURNS_PER_FUNCTION})"
    );
    let reason = analysed.features[&Feature::HttpServer]
        .as_ref()
        .expect_err("the HTTP server feature is refused");
    assert!(
        reason.contains("40 RET instructions") && reason.contains("cap of 32"),
        "the reason names the count and the cap: {reason}"
    );
}
